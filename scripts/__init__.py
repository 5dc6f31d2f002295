"""Developer tools: the case study's one command and the real-photo archives of ../shared/data."""
