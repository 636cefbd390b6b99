"""Serving one FlexiQ model under a fluctuating load: the export file, the integer runtime whose
ratio switch only moves boundaries, controllers that pick the ratio, and the serving benchmark."""
