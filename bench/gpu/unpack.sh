#!/usr/bin/env bash
# Unpacks what bench/gpu/pack.sh sent (Node and node_modules) on the GPU machine, once; sourced by run*.sh there.
# xz is installed there (../shared/reference/device.md); Python's lzma if not.
if [ ! -x .device/node ]; then
  if command -v xz > /dev/null; then
    xz -dc .device/node.xz > .device/node && tar -xJf .device/node_modules.tar.xz
  else
    python3 -c 'import lzma, shutil, tarfile; shutil.copyfileobj(lzma.open(".device/node.xz"), open(".device/node", "wb")); tarfile.open(".device/node_modules.tar.xz").extractall(".")'
  fi
  chmod +x .device/node
fi
