"""Stage 4: result records -> tidy tables, paper tables and plots."""
