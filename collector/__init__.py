"""collector: fetch diagnostic log bundles from Huawei Cloud CloudDC physical servers, fleet-wide."""

__version__ = "0.1.0"
