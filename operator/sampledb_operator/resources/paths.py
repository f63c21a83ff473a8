"""Where things are inside the database container: one definition for the builders that share them."""

CONFIG_DIR = "/etc/sampledb/config"  # the instance's ConfigMap
SOCKET_DIR = "/var/run/postgresql"  # the Pod's private emptyDir: the server's socket, files the start script writes
DATA_MOUNT = "/var/lib/postgresql/data"
PGDATA = f"{DATA_MOUNT}/pgdata"  # a subdirectory: a fresh volume's root may hold lost+found
TERMINATION_LOG = "/dev/termination-log"  # the container's termination message, which the operator reads
