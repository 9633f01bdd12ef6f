"""rope_jax: RoPE, p-RoPE and the analyses of "Round and Round We Go!" (Barbero et al., 2025)."""

from setuptools import find_packages, setup

# jax/flax/optax/orbax move together; seqio 0.0.20 needs tensorflow and tensorflow-text 2.21.
# Python 3.11 resolves jax 0.10.x; Python 3.12+ resolves jax 0.12.x.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8,<0.14",
    "ml-collections>=1.1.0",
    "absl-py>=2.1",
    "etils[epath]",
    "numpy>=1.26",
    "tensorflow==2.21.*",
    "tensorflow-text==2.21.*",
    "tensorflow-datasets>=4.9.10",
    "seqio==0.0.20",
    "sentencepiece>=0.2.0",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",
    "psutil>=5.9",
    "importlib_resources",  # tfds dataset builders (tfds build) import it.
]

setup(
    name="rope_jax",
    version="0.1.0",
    description="RoPE / p-RoPE research code in JAX/Flax (Barbero et al., ICLR 2025).",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rope_jax", "rope_jax.*"]),
    package_data={"rope_jax": ["data/assets/*", "analysis/prompts*.txt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # transformers + torch: the Hugging Face round-trip tests (tests/test_hf_*.py) compare
        # with transformers' own PyTorch models. The CPU build of torch is enough; .ci/run
        # installs it first (pip would otherwise resolve a CUDA build of several GB).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "transformers>=5.0", "torch>=2.4"],
        # libtpu matching the installed jax: TPU VMs, and ahead-of-time TPU compiles on a CPU host.
        "tpu": ["jax[tpu]>=0.10.2,<0.13"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.13"],
    },
    entry_points={},
)
