/* OpenMP pragmas that vanish in a build without OpenMP (OPENMP=0), so the sources compile
 * -Wall clean either way: MG_OMP(omp parallel for) instead of #pragma omp parallel for. */
#ifndef MG_OPS_CPU_PARALLEL_H
#define MG_OPS_CPU_PARALLEL_H

#ifdef MG_HAVE_OPENMP
#define MG_OMP(x) _Pragma(#x)
#else
#define MG_OMP(x)
#endif

/* Element-wise loops shorter than this run on one thread: forking costs more than it saves. */
#define MG_OMP_MIN_ELEMS 32768

#endif
