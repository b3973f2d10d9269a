"""The paths a plan runs on: the reference chain in torch (``eager``), the generated C kernels (``c``,
run by ``cpu``) and the generated Triton kernels (``triton``), with one build and cache module (``build``)."""
