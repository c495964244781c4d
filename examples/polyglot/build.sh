#!/bin/sh
# Compiles the Java grain into its class directory (grains/shout), against sand.jar of the
# build tree (or $SAND_LIB_DIR/sand.jar). Run once before validate/deploy.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
jar=${SAND_LIB_DIR:-$here/../../build/lib}/sand.jar
javac --release 17 -cp "$jar" -d "$here/grains/shout" "$here/grains/shout/example/Shout.java"
