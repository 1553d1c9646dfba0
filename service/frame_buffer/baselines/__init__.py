"""Raw-client baselines that `frame-buffer bench` measures the backends against."""
