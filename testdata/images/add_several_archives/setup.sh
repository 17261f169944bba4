# run by tests/engine_golden_images.rs inside the context copy
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C payload -cf a.tar top.txt
mkdir p2 && echo second > p2/second.txt
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C p2 -cf b.tar second.txt && gzip -n b.tar
rm -rf payload p2
