"""Localization scores on hand-made maps, where every number can be worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fgdesk.evaluate.localization import (
    LocalizationTally,
    box_area_fraction,
    box_mask,
    centre_gaussian,
    chance_summary,
    energy_in_box,
    half_max_mask,
    is_constant,
    mask_iou,
    mass_mask,
    pointing_game,
    score_dataset,
    score_map,
)


def test_box_mask_holds_the_pixels_whose_centres_are_inside():
    mask = box_mask((6, 8), (2, 1, 5, 3))  # x1, y1 exclusive
    assert mask.sum() == 3 * 2
    assert mask[1:3, 2:5].all()
    assert box_area_fraction((6, 8), (2, 1, 5, 3)) == pytest.approx(6 / 48)


def test_a_box_smaller_than_a_pixel_still_marks_the_pixel_under_its_centre():
    mask = box_mask((4, 4), (1.6, 2.6, 1.8, 2.8))
    assert mask.sum() == 1 and mask[2, 1]


def test_pointing_game_hits_only_when_the_peak_is_in_the_box():
    heatmap = np.zeros((10, 10))
    heatmap[4, 7] = 1.0
    assert pointing_game(heatmap, (6, 3, 9, 6))
    assert not pointing_game(heatmap, (0, 0, 5, 5))
    assert pointing_game(heatmap, (0, 0, 5, 5), tolerance=3.0)  # peak centre (7.5, 4.5) is 2.5 px away
    assert pointing_game(torch.from_numpy(heatmap), (6, 3, 9, 6))  # torch maps too


def test_energy_is_the_share_of_the_map_inside_the_box():
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 3.0
    heatmap[3, 3] = 1.0
    assert energy_in_box(heatmap, (0, 0, 2, 2)) == pytest.approx(0.75)
    assert energy_in_box(heatmap, (2, 2, 4, 4)) == pytest.approx(0.25)
    assert math.isnan(energy_in_box(np.zeros((4, 4)), (0, 0, 2, 2)))
    assert math.isnan(energy_in_box(-heatmap, (0, 0, 2, 2)))  # negatives clip to zero: nothing left


def test_constant_maps_are_detected_and_miss_the_pointing_game():
    assert is_constant(np.full((5, 5), 0.04)) and is_constant(np.zeros((3, 3)))
    assert not is_constant(np.eye(3))
    flat = np.full((10, 10), 0.01)
    assert not pointing_game(flat, (0, 0, 10, 10))  # even a box over everything: no peak, no hit
    assert energy_in_box(flat, (0, 0, 5, 10)) == pytest.approx(0.5)


def test_thresholded_masks_and_their_iou():
    heatmap = np.array([[4.0, 3.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # total 10
    assert mass_mask(heatmap, 0.5).sum() == 2  # 4 + 3 >= 5
    assert mass_mask(heatmap, 0.8).sum() == 3  # 4 + 3 + 2 >= 8
    assert (half_max_mask(heatmap) == (heatmap >= 2.0)).all()
    truth = box_mask(heatmap.shape, (0, 0, 2, 1))  # the two top-left pixels
    assert mask_iou(mass_mask(heatmap, 0.5), truth) == 1.0
    assert mask_iou(half_max_mask(heatmap), truth) == pytest.approx(2 / 3)
    scores = score_map(heatmap, (0, 0, 2, 1))
    assert scores.pointing and scores.energy == pytest.approx(0.7) and scores.iou_mass == 1.0 and not scores.constant


def test_centre_gaussian_peaks_in_the_middle_and_wins_on_central_boxes():
    baseline = centre_gaussian((21, 31))
    assert baseline.max() == pytest.approx(1.0)
    assert np.unravel_index(baseline.argmax(), baseline.shape) == (10, 15)
    assert pointing_game(baseline, (12, 8, 19, 13))
    assert not pointing_game(baseline, (0, 0, 5, 5))
    assert energy_in_box(baseline, (10, 7, 21, 14)) > box_area_fraction((21, 31), (10, 7, 21, 14))


def test_tally_and_dataset_helpers_average_over_images():
    hit = np.zeros((4, 4))
    hit[1, 1] = 1.0
    miss = np.zeros((4, 4))
    miss[3, 3] = 1.0
    box = (0, 0, 2, 2)
    summary = score_dataset([(hit, box), (miss, box), (np.ones((4, 4)), box)])
    assert summary.images == 3 and summary.constant == 1
    assert summary.pointing == pytest.approx(1 / 3)
    assert summary.energy == pytest.approx((1.0 + 0.0 + 0.25) / 3)
    empty = LocalizationTally().summary()
    assert empty.images == 0 and math.isnan(empty.pointing)
    assert empty.as_dict()["pointing"] is None  # JSON-ready
    chance = chance_summary([((4, 4), box), ((4, 4), (0, 0, 4, 4))])
    assert chance.pointing == pytest.approx((0.25 + 1.0) / 2) and chance.energy == chance.pointing
