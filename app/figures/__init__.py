"""Pure figure builders: parsed run data in, plotly Figure out (no Streamlit, no file access)."""
