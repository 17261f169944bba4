# run by tests/engine_golden_images.rs inside the context copy
bash "$TESTDATA/images-lib/make-multiplatform.sh" mp linux/amd64 linux/arm64
