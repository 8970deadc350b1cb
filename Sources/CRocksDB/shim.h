// RocksDB's C API, from Debian's librocksdb-dev. MeridianStorage is the only importer.
#include <rocksdb/c.h>
