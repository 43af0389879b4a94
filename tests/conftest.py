# --- markers (kept here because pyproject.toml holds no marker list) ---------------
def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "book: builds the Jupyter Book website (slow; deselect with -m 'not book')",
    )
