"""Installs the learned active-learning package (Bachman et al., ICML 2017)."""

import setuptools

setuptools.setup(
    name="active-learning-mn",
    version="0.1.0",
    description=(
        "Learning algorithms for active learning: a meta-learned active "
        "Matching Network in TensorFlow/Keras, trainable and servable."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["active_learning", "active_learning.*", "trainers",
                 "trainers.*", "export", "export.*"]),
    package_data={"trainers": ["configs/*.cfg"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorflow-probability>=0.25,<0.26",
        # TFP 0.25 imports tf_keras at import time.
        "tf-keras>=2.21,<2.22",
        "tensorflow-datasets>=4.9,<5",
        "numpy>=1.26",
        "pandas>=2.0",
        "absl-py>=2.0",
        # Decodes PNG/JPEG/BMP files (Omniglot, image folders).
        "pillow>=9",
        "matplotlib>=3.7",
        # tf.summary needs it; TensorFlow 2.21 no longer pulls it in.
        "tensorboard>=2.20,<2.22",
    ],
    # pytest-xdist: the suite runs in two processes (.ci/run), about 30% faster on 2 cores.
    extras_require={
        # hypothesis: property tests over the signatures' inputs and the loaders.
        "test": ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6"],
        # The Label Studio bridge (export/label_studio.py) and its browser test.
        # The server itself goes in its own venv: scripts/install_label_studio.sh.
        "label_studio": ["pillow>=9", "playwright>=1.40"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
