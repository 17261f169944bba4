# run by tests/engine_golden_images.rs inside the context copy
chmod 4755 dir/su
chmod 2755 dir/sg
chmod 1777 dir/shared
