"""The result browser (`flexiq dashboard`): Streamlit pages over the store's read-only `Repository`.

`app.py` is the Streamlit entry and `views/` its pages; `data.py` turns repository dicts into pandas
DataFrames (cached for a few seconds, so a running search shows up as it goes), `charts.py` builds
the Plotly figures and `progress.py` shows where running searches are. Nothing here writes to the
store or imports `workers`.
"""
