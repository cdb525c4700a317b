"""esper_lab: a runnable lab for Esper's Policy Network V2 (Tamiyo Next, Phase 4)."""

__version__ = "0.1.0"
