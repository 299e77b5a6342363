"""The cost view's settings: prices per GPU-hour (one, and per GPU model), the idle time and threshold; a malformed
value stops start-up naming the variable and what it expects."""

from __future__ import annotations

import pytest

from gpuops.config import load_settings
from gpuops.cost.view import Pricing
from gpuops.errors import ConfigError


def test_defaults_are_an_hour_under_five_percent_at_a_public_h100_price() -> None:
    s = load_settings({})
    assert (s.gpu_hour_price, s.gpu_hour_prices) == (12.29, ())
    assert (s.idle_after_seconds, s.idle_utilisation_percent) == (3600.0, 5.0)


def test_per_model_prices_match_dcgm_model_names_and_fall_back_to_the_default() -> None:
    s = load_settings({"GPUOPS_GPU_HOUR_PRICE": "3", "GPUOPS_GPU_HOUR_PRICES": "H100=2.49, a100=1.10"})
    pricing = Pricing(s.gpu_hour_price, s.gpu_hour_prices)
    assert pricing.of("NVIDIA H100 80GB HBM3") == 2.49
    assert pricing.of("NVIDIA A100-SXM4-80GB") == 1.10
    assert pricing.of("NVIDIA L40S") == 3.0


@pytest.mark.parametrize(("env", "variable", "expectation"), [
    ({"GPUOPS_GPU_HOUR_PRICES": "H100"}, "GPUOPS_GPU_HOUR_PRICES", "MODEL=PRICE"),
    ({"GPUOPS_GPU_HOUR_PRICES": "H100=free"}, "GPUOPS_GPU_HOUR_PRICES", "MODEL=PRICE"),
    ({"GPUOPS_GPU_HOUR_PRICES": "=2.0"}, "GPUOPS_GPU_HOUR_PRICES", "MODEL=PRICE"),
    ({"GPUOPS_GPU_HOUR_PRICES": "H100=-1"}, "GPUOPS_GPU_HOUR_PRICES", "MODEL=PRICE"),
    ({"GPUOPS_GPU_HOUR_PRICE": "0"}, "GPUOPS_GPU_HOUR_PRICE", "price > 0"),
    ({"GPUOPS_IDLE_AFTER_SECONDS": "-5"}, "GPUOPS_IDLE_AFTER_SECONDS", "seconds > 0"),
    ({"GPUOPS_IDLE_UTILISATION_PERCENT": "150"}, "GPUOPS_IDLE_UTILISATION_PERCENT", "between 0 and 100"),
])
def test_a_malformed_cost_setting_names_the_variable_and_what_it_expects(env: dict[str, str], variable: str,
                                                                         expectation: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert variable in str(info.value) and expectation in str(info.value)
