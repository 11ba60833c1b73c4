"""The shared gradient check itself: it accepts a right gradient and catches a wrong one."""

import numpy as np
from gradcheck import directional_derivatives


def test_directional_derivatives_tell_a_right_gradient_from_a_wrong_one():
    rng = np.random.default_rng(0)
    point = {"w": rng.standard_normal((3, 4)), "u": rng.standard_normal(5)}

    def loss(at):  # strongly curved: a second-order difference would be off by ~eps^2 * 6
        return np.sum(np.exp(3 * at["w"])) + np.sum(at["u"] ** 4)

    right = {"w": 3 * np.exp(3 * point["w"]), "u": 4 * point["u"] ** 3}
    for ad, fd in directional_derivatives(loss, point, right, rng, directions=3):
        assert abs(ad - fd) <= 1e-8 * max(1.0, abs(fd)), (ad, fd)
    wrong = {"w": right["w"], "u": 3 * point["u"] ** 3}
    pairs = list(directional_derivatives(loss, point, wrong, rng, directions=3))
    assert all(abs(ad - fd) > 1e-3 * abs(fd) for ad, fd in pairs), pairs
