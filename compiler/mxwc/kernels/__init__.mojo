# mxw custom MAX kernels (Mojo), compiled into the graphs that use them: the runtime needs none of this.
