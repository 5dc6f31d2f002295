"""Result records: one self-describing JSON file per protocol run."""
