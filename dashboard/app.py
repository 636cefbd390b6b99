"""The dashboard's entry: `flexiq dashboard [--db URL]`, or `streamlit run dashboard/app.py -- --db URL`.

The database is opened read-only before any page runs, so an empty database, an older schema or an
unreachable server is one clear message (the URL shown without its password) instead of a page
full of tracebacks. Pages: Studies (all searches), Study (one search's results), Compare (fronts),
Schedules (nightly searches and their runs).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data
from flexiq_search.errors import FlexiqError
from flexiq_search.store import StoreEmpty, StoreOutdated

VIEWS = Path(__file__).with_name("views")

st.set_page_config(page_title="flexiq studies", page_icon=":material/insights:", layout="wide")
url = data.database_url()
try:
    data.repository(url)
except StoreEmpty as exc:
    st.info(f"{exc}. Results appear here once a search runs into it: `flexiq search ... --db URL`.")
    st.stop()
except StoreOutdated as exc:
    st.warning(str(exc))
    st.stop()
except FlexiqError as exc:
    st.error(str(exc))
    st.stop()

page = st.navigation([
    st.Page(VIEWS / "studies.py", title="Studies", icon=":material/view_list:", default=True),
    st.Page(VIEWS / "study.py", title="Study", icon=":material/insights:", url_path="study"),
    st.Page(VIEWS / "compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page(VIEWS / "schedules.py", title="Schedules", icon=":material/schedule:", url_path="schedules"),
])
try:
    page.run()
except FlexiqError as exc:  # e.g. the server went away since the page was opened
    st.error(str(exc))
