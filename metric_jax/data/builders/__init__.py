"""The offline tfds builders, keyed by the short names `metric_jax.data.get_builder` takes.

Class names carry a `MetricJax` prefix, so tfds registers them as `metric_jax_<name>` and they never clash with tfds' own
`mnist`, `omniglot`, `cifar10`, ... builders.
"""

from metric_jax.data.builders._base import CorruptFileError, MissingFileError, OfflineBuilder
from metric_jax.data.builders.sklearn_digits import MetricJaxSklearnDigits
from metric_jax.data.builders.mnist import MetricJaxFashionMnist, MetricJaxMnist
from metric_jax.data.builders.omniglot import MetricJaxOmniglot
from metric_jax.data.builders.cifar10 import MetricJaxCifar10
from metric_jax.data.builders.svhn import MetricJaxSvhn
from metric_jax.data.builders.cub200 import MetricJaxCub200
from metric_jax.data.builders.cars196 import MetricJaxCars196
from metric_jax.data.builders.sop import MetricJaxSop

BUILDERS = {
    cls.SHORT_NAME: cls
    for cls in (MetricJaxSklearnDigits, MetricJaxMnist, MetricJaxFashionMnist, MetricJaxOmniglot, MetricJaxCifar10,
                MetricJaxSvhn, MetricJaxCub200, MetricJaxCars196, MetricJaxSop)
}

__all__ = ["BUILDERS", "CorruptFileError", "MissingFileError", "OfflineBuilder"]
