"""esper_lab's live training dashboard: `esper-lab dashboard` or `streamlit run app/dashboard.py` from the repository
root.

Everything on the page is read from run directories under `$ESPER_LAB_RUNS` (default ./runs); training runs as a
child process. A refreshed or reopened page therefore finds every run as it is.

It listens on 127.0.0.1 only, however it is started: `esper-lab dashboard` passes `--server.address 127.0.0.1`, and
`.streamlit/config.toml` sets `server.address` for `streamlit run`. The page starts and stops trainers on this
machine and has no login, so expose it deliberately and at your own risk, e.g.
`streamlit run app/dashboard.py --server.address 0.0.0.0` on a trusted network, or better through an SSH tunnel
(`ssh -L 8501:127.0.0.1:8501 host`).
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


def listening_everywhere() -> bool:
    """Whether this server listens on every interface only because no `server.address` was set (streamlit started
    outside the repository root, where .streamlit/config.toml is not read); an explicit address is deliberate."""
    return not st.get_option("server.address")


def refuse_to_serve() -> None:
    st.title("esper_lab")
    st.error("This dashboard server listens on every network interface: no `server.address` was set, because "
             "streamlit was started outside the repository root. The page starts and stops trainers, so it stays "
             "empty. Restart it with `esper-lab dashboard`, from the repository root, or with `--server.address "
             "127.0.0.1` (`--server.address 0.0.0.0` exposes it deliberately, at your own risk).")


def main() -> None:
    st.set_page_config(page_title="esper_lab", page_icon="🌱", layout="wide")
    if listening_everywhere():
        refuse_to_serve()
        return
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
