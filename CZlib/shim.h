// zlib for permessage-deflate (RFC 7692). deflateInit2/inflateInit2 are macros (they pass
// the library version and the stream's size for an ABI check), so Swift reaches them
// through these wrappers. Nothing else belongs in this header.
#ifndef TICKWIRE_CZLIB_SHIM_H
#define TICKWIRE_CZLIB_SHIM_H

#include <zlib.h>

static inline int tw_deflate_init2(z_streamp strm, int level, int windowBits, int memLevel, int strategy) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, memLevel, strategy);
}

static inline int tw_inflate_init2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}

#endif
