// The CUDA build of dq.cpp: nvcc compiles a .cu file as CUDA (see build.sh).
#include "dq.cpp"
