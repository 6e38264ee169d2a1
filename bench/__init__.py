"""mediascan benchmarks: each figure of the service next to a baseline measured in the same run.

`python -m bench` (`make bench`) runs them all at full size and prints one table; `--quick`
(`make bench-quick`) runs every benchmark at a small size in about two minutes. Modules:

- `submit`: SubmitScan against a bare grpc.aio unary echo server (`bare.py`)
- `fanout`: WatchJob subscribers against a bare grpc.aio server pushing the same messages
- `first_scan`: a first scan against an `ffprobe` loop
- `rescan`: a rescan of an unchanged tree against `find -printf` (100,000 files a first scan
  probed; 1,000,000 placeholders whose rows are written into the library), and its memory
- `jobs`: many tiny jobs against the same files as one job
- `list_videos`: ListVideos pages of each order and each filter on a library of 1,000,000
  videos against the same query on a bare SQLite connection
- `library_size`: that library's bytes per video on SQLite and PostgreSQL, and an idle server's
  memory, against the table alone and an empty library
- `library_watch`: a watched library's write-to-ADDED time against its quiet window and
  `ffprobe`, its idle cost against no library, and its polls against `find -printf`

`library.py` generates the large library (rows that look like real probes, written straight
into the store), `loadgen.py` is the load generator (run in processes of its own), `serve.py` runs
`mediascan-server` under a chosen event loop, `common.py` holds the shared plumbing.
"""
