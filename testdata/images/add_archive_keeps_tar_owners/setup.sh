# run by tests/engine_golden_images.rs inside the context copy
tar --sort=name --owner=1000 --group=1001 --numeric-owner --mtime=@0 -C payload -cf a.tar .
rm -rf payload
