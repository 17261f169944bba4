# run by tests/engine_golden_images.rs inside the context copy
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C payload -cf a.tar .
rm -rf payload
bzip2 a.tar
