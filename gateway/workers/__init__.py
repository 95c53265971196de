"""Worker processes (issue 8, `gateway.workers`): several processes accept on the same
TPROXY ports (SO_REUSEPORT) while the main process keeps everything process-wide. The
theory of operation is in `pool.py`."""
