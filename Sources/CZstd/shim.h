// zstd's C API, from Debian's libzstd-dev. MeridianWire is the only importer.
#include <zstd.h>
