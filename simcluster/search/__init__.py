"""Many simulations: sweeps, capacity and cheapest-configuration searches, and the hardware
design-space search (:mod:`simcluster.search.design`)."""
