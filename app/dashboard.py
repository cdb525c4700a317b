"""esper_lab's live training dashboard: `esper-lab dashboard` or `streamlit run app/dashboard.py`.

Everything on the page is read from run directories under `$ESPER_LAB_RUNS` (default ./runs); training runs as a
child process. A refreshed or reopened page therefore finds every run as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `streamlit run app/dashboard.py` puts app/, not the repo root, on sys.path
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from app import data, process  # noqa: E402
from app.views import compare, curves, embeddings, op_values, seeds, status, train  # noqa: E402
from app.views.common import guarded  # noqa: E402
from esper_lab.runs import runs_root  # noqa: E402

VIEWS = {"Curves": curves, "Blueprint embeddings": embeddings, "Per-op values": op_values, "Seeds": seeds,
         "Compare": compare}


def no_runs() -> None:
    st.title("esper_lab")
    st.info(f"No runs yet in `{runs_root()}`. Start one from the **Train** panel on the left (the `tiny` preset "
            "finishes in about a minute), or from a shell: `esper-lab train --preset tiny`.")


def main() -> None:
    st.set_page_config(page_title="esper_lab", page_icon="🌱", layout="wide")
    runs = data.available_runs()
    states = {r.name: process.run_status(r.dir).get("state") for r in runs}
    with st.sidebar:
        st.title("esper_lab")
        st.caption("Phase 4 policy lab: a recurrent factored actor-critic deciding the life of seed modules.")
        run = train.pick_run(runs)
        st.divider()
        guarded(train.train_panel)(any(s == "running" for s in states.values()))
    vanished = st.session_state.pop("vanished", None)
    if vanished:
        st.warning(f"Run **{vanished}** is gone (its directory was deleted or moved)."
                   + (f" Showing **{run.name}** instead." if run else ""))
    if run is None:
        no_runs()
        return
    is_live = states.get(run.name) == "running"
    status.header(run, is_live)
    tabs = st.tabs(list(VIEWS), key="view", on_change="rerun")
    for tab, view in zip(tabs, VIEWS.values()):
        if tab.open:
            with tab:
                view.render(run, is_live, runs)


main()
