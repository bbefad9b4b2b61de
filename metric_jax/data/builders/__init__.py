"""The offline tfds builders, keyed by the short names `metric_jax.data.get_builder` takes.

Class names carry a `MetricJax` prefix, so tfds registers them as `metric_jax_<name>` and they never clash with tfds' own
`mnist`, `omniglot`, `cifar10`, ... builders.
"""

from metric_jax.data.builders._base import CorruptFileError, MissingFileError, OfflineBuilder
from metric_jax.data.builders.sklearn_digits import MetricJaxSklearnDigits
from metric_jax.data.builders.mnist import MetricJaxFashionMnist, MetricJaxMnist
from metric_jax.data.builders.omniglot import MetricJaxOmniglot

BUILDERS = {
    cls.SHORT_NAME: cls
    for cls in (MetricJaxSklearnDigits, MetricJaxMnist, MetricJaxFashionMnist, MetricJaxOmniglot)
}

__all__ = ["BUILDERS", "CorruptFileError", "MissingFileError", "OfflineBuilder"]
