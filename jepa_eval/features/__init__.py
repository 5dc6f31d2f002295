"""Stage 2: images -> feature vectors, extracted once into a content-keyed cache."""
