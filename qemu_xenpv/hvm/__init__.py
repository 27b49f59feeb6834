"""HVM domains: the builder, hvmloader's boot info, the domain and its QEMU."""
