"""``python -m fastopt [--info | --cmake-dir | --includes | --libs]``: what this install is (the default,
as JSON), and build flags for C and C++ users."""
import argparse
import json

import fastopt
from fastopt._paths import get_cmake_dir, get_include, get_library_dir

ap = argparse.ArgumentParser(prog="python -m fastopt", description=__doc__)
group = ap.add_mutually_exclusive_group()
group.add_argument("--cmake-dir", action="store_true", help="the folder of fastoptConfig.cmake")
group.add_argument("--includes", action="store_true", help="-I flags for fastopt.h")
group.add_argument("--libs", action="store_true", help="linker flags for libfastopt")
group.add_argument("--info", action="store_true", help="version, SIMD levels, threads, library folder and "
                   "whether CUDA can run, as JSON (the default)")
args = ap.parse_args()
if args.cmake_dir:
    print(get_cmake_dir())
elif args.includes:
    print(f"-I{get_include()}")
elif args.libs:
    print(f"-L{get_library_dir()} -Wl,-rpath,{get_library_dir()} -lfastopt")
else:
    print(json.dumps(fastopt.info()))
