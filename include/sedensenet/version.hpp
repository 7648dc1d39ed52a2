#pragma once
/// \file
/// Library version.

#define SEDENSENET_VERSION_MAJOR 0
#define SEDENSENET_VERSION_MINOR 1
#define SEDENSENET_VERSION_PATCH 0
#define SEDENSENET_VERSION_STRING "0.1.0"

namespace sedensenet {
/// "major.minor.patch" of the headers in use.
inline const char* version() { return SEDENSENET_VERSION_STRING; }
}  // namespace sedensenet
