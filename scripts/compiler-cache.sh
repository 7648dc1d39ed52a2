# Sourced by scripts/test.sh and scripts/demo.sh: compile through ccache when it is installed
# (scripts/setup.sh installs it), so that re-running the test command, or running it in another
# clone of the repository, recompiles only what changed. CCACHE=0 turns it off (a clean build, as
# docs/support.md times it). Sets compiler_cache_args: the CMake arguments to add.
compiler_cache_args=(-DCMAKE_CXX_COMPILER_LAUNCHER=)
if [[ "${CCACHE:-1}" != 0 ]] && command -v ccache >/dev/null; then
  # Paths inside the repository are hashed relative to it, so that clones share the cache; the
  # precompiled headers are cacheable with these sloppiness settings (ccache's manual, "Precompiled
  # headers").
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
  export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-10G}
  compiler_cache_args=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
