# run by tests/engine_golden_images.rs inside the context copy
gzip -n notes.txt
