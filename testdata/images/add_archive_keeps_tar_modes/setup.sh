# run by tests/engine_golden_images.rs inside the context copy
chmod 600 payload/top.txt
chmod 700 payload/sub
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C payload -cf a.tar .
rm -rf payload
