"""Phantom v2: BraTS-shaped cases simulated from MR physics on a choice of anatomy.

Per case, in order: draw the parameters (`draw_case`); deform the anatomy's tissue
fractions into the BraTS grid with larger, multi-scale deformations than v1 (ventricle
size, cortical thickness and the tumour's mass effect vary); add vessels; place a
textured tumour anywhere in the brain, its oedema following white matter; compute each
contrast's signal from the compartments' PD, T1 and T2 by its sequence's equation
(`dygan_tf.data.mr_physics`); acquire it (bias field, thick slices, Rician noise,
misregistration). `make_case` returns the volumes, the drawn parameters and, for tests,
the truth maps. Writing and layouts are `dygan_tf.data.phantom`'s.
"""

import numpy as np
import scipy.ndimage

from dygan_tf.data import mr_physics
from dygan_tf.data.anatomy import load_anatomy
from dygan_tf.data.volume_sampling import SHAPE, smooth_field, trilinear

VERSION = "v2"
MODALITIES = ("t1", "t1ce", "t2", "flair")
# Output box that can hold the deformed brain (BraTS grid voxels).
BOX_LO, BOX_HI = np.array([24, 8, 0]), np.array([216, 232, 155])
# BraTS grid voxel -> MNI152 grid voxel: (218 - i, 236 - j, k + 2) (see phantom.AFFINE).
TO_GRID = ((-1, 218), (-1, 236), (1, 2))
CENTRE = np.array([120.0, 118.0, 70.0], dtype=np.float32)  # MNI (0, -16, 0)
# The lateral ventricles' centre (MNI (0, -10, 15) mm) in BraTS grid voxels and the
# widths (mm) of the region scaled around it.
VENTRICLE_CENTRE = np.array([120.0, 112.0, 85.0], dtype=np.float32)
VENTRICLE_SIGMA = np.array([22.0, 32.0, 18.0], dtype=np.float32)
LABELS = {"necrosis": 1, "non_enhancing": 1, "oedema": 2, "enhancing": 4}
CHANNELS = ("csf", "gm", "wm", "mask", "ventricles")


def _ventricle_map(anatomy):
    """The lateral ventricles (0/1) on the anatomy grid: CSF-rich voxels at least 12 mm
    inside the brain, within MNI |x| < 30, -45 < y < 25, -5 < z < 35 mm."""
    depth = scipy.ndimage.distance_transform_edt(anatomy.mask > 0)
    i, j, k = np.ogrid[: anatomy.mask.shape[0], : anatomy.mask.shape[1], : anatomy.mask.shape[2]]
    box = (np.abs(i - 98) < 30) & (j - 134 > -45) & (j - 134 < 25) & (k - 72 > -5) & (k - 72 < 35)
    return ((anatomy.csf > 0.5) & (depth > 12) & box).astype(np.float32)


_PADDED = {}


def _padded(anatomy_name, template):
    """The anatomy's channels stacked, zero-padded by one voxel, the brain dilated by
    two voxels (where sampling can give brain), and deep brain voxels for tumour
    centres; cached per process."""
    key = (anatomy_name, template)
    if key not in _PADDED:
        a = load_anatomy(anatomy_name, template)
        stacked = np.stack([a.csf, a.gm, a.wm, a.mask, _ventricle_map(a)], axis=-1)
        near = scipy.ndimage.binary_dilation(a.mask > 0, iterations=2)
        depth = scipy.ndimage.distance_transform_edt(a.mask > 0)
        deep = np.argwhere(depth >= 18)
        _PADDED[key] = (np.pad(stacked, [(1, 1)] * 3 + [(0, 0)]), np.pad(near, 1), deep)
    return _PADDED[key]


def draw_case(rng, grade, deep):
    """Every random choice of one case but the noise and fields: a JSON-ready dict."""
    field = 1.5 if rng.random() < 0.5 else 3.0
    tissues = mr_physics.draw_tissues(rng, field)
    enhancing = rng.random() < (0.85 if grade == "HGG" else 0.1)
    big = grade == "HGG"
    centre_grid = deep[rng.integers(len(deep))]
    centre = [float(s * (c - o)) for c, (s, o) in zip(centre_grid, TO_GRID)]  # BraTS voxel
    return {
        "field_T": field,
        "tissues": tissues,
        "tumour_tissues": mr_physics.draw_tumour(rng, tissues),
        "sequences": mr_physics.draw_sequences(rng, tissues),
        "deformation": {
            "angles_deg": rng.uniform(-6, 6, size=3).round(3).tolist(),
            "scale": rng.uniform(0.92, 1.08, size=3).round(4).tolist(),
            "shift_mm": rng.uniform(-5, 5, size=3).round(3).tolist(),
            "elastic_mm": [float(rng.uniform(2, 5)), float(rng.uniform(0.5, 1.5))],
            # Volume factor of the region around the ventricles, log-normal (SD 0.45:
            # the ventricles' own volume then varies by ~20 % over cases; 0.3 gave 14 %).
            "ventricle_factor": float(np.exp(0.45 * rng.standard_normal())),
            # WM fraction ** gamma: gamma > 1 thins WM in favour of GM (thicker cortex).
            "cortex_gamma": float(np.exp(0.25 * rng.standard_normal())),
        },
        "tumour": {
            "kind": "enhancing" if enhancing else "non_enhancing",
            "centre_voxel": centre,
            "radius_mm": float(rng.uniform(10, 22) if big else rng.uniform(7, 16)),
            "necrosis": float(rng.uniform(0.25, 0.55)) if enhancing else 0.0,
            "rim": float(rng.uniform(0.2, 0.4)),
            "oedema_mm": float(rng.uniform(8, 30)),
            "mass_effect": float(rng.uniform(0.1, 0.35)),
            "gd_mM": float(rng.uniform(*mr_physics.GADOLINIUM["enhancing_mM"])),
        },
        "blood_gd_mM": float(rng.uniform(*mr_physics.GADOLINIUM["blood_mM"])),
        "flow_void": float(rng.uniform(*mr_physics.FLOW_VOID)),
        "acquisition": {m: _draw_acquisition(rng, m, field) for m in MODALITIES},
    }


def _draw_acquisition(rng, modality, field):
    """SNR, gain, slice thickness (2-D acquisitions of T2 and FLAIR are common, of T1
    sometimes) and the rigid misregistration against T1CE, the reference (as BraTS
    registers every sequence to T1CE)."""
    thick_chance = {"t1": 0.3, "t1ce": 0.0, "t2": 0.6, "flair": 0.6}[modality]
    thickness = int(rng.integers(3, 6)) if rng.random() < thick_chance else 1
    reference = modality == "t1ce"
    return {
        "snr": float(rng.uniform(12, 40) * (1.0 if field == 1.5 else 1.4)),
        "gain": float(rng.uniform(1500, 6000)),
        "bias_sd": float(rng.uniform(0.05, 0.15)),
        "slice_mm": thickness,
        "rotation_deg": [0.0] * 3 if reference else rng.uniform(-1, 1, size=3).round(3).tolist(),
        "shift_mm": [0.0] * 3 if reference else rng.uniform(-1, 1, size=3).round(3).tolist(),
    }


def _rotation(angles_deg):
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _expand(coords, centre, sigma, amount):
    """Coordinates pulled towards `centre` by `amount` of a Gaussian of widths `sigma`
    (voxels): the image around it grows (ventricles, a tumour's mass effect)."""
    d = [coords[a] - centre[a] for a in range(3)]
    weight = np.exp(-0.5 * sum((d[a] / sigma[a]) ** 2 for a in range(3)))
    weight *= amount
    for a in range(3):
        coords[a] -= d[a] * weight


def _output_to_anatomy(rng, deformation, tumour):
    """(3, box) float32 anatomy-grid coordinates of every output-box voxel: ventricle
    scaling and mass effect (in output space), a global rotation, scaling and shift,
    and a coarse (~40 mm) plus a fine (~20 mm) elastic field."""
    box = tuple(BOX_HI - BOX_LO)
    grid = [np.arange(a, b, dtype=np.float32) for a, b in zip(BOX_LO, BOX_HI)]
    coords = np.empty((3,) + box, dtype=np.float32)
    for a in range(3):
        shape = [1, 1, 1]
        shape[a] = box[a]
        coords[a] = grid[a].reshape(shape)
    linear = 1.0 - deformation["ventricle_factor"] ** (-1.0 / 3.0)
    _expand(coords, VENTRICLE_CENTRE, VENTRICLE_SIGMA, linear)
    radius = tumour["radius_mm"]
    _expand(coords, np.array(tumour["centre_voxel"]), [1.3 * radius] * 3, tumour["mass_effect"])
    rot = (_rotation(deformation["angles_deg"]) / np.array(deformation["scale"])[:, None]).astype(
        np.float32
    )
    centred = [coords[a] - CENTRE[a] for a in range(3)]
    coarse, fine = deformation["elastic_mm"]
    for a, (flip, offset) in enumerate(TO_GRID):
        moved = sum(rot[a, b] * centred[b] for b in range(3)) + CENTRE[a]
        moved += deformation["shift_mm"][a]
        moved += coarse * smooth_field(rng, (5, 5, 4), box)
        moved += fine * smooth_field(rng, (10, 11, 8), box)
        coords[a] = flip * moved + offset
    return coords


def _sample_anatomy(coords, padded, near):
    """{channel: (box) float32} of the anatomy at `coords`, zero away from the brain."""
    nearest = [
        np.clip(np.rint(c).astype(np.int32) + 1, 0, n - 1) for c, n in zip(coords, near.shape)
    ]
    candidates = np.nonzero(near[tuple(nearest)])
    sampled = trilinear(padded, coords[(slice(None),) + candidates])
    out = {}
    for c, name in enumerate(CHANNELS):
        volume = np.zeros(coords.shape[1:], dtype=np.float32)
        volume[candidates] = sampled[:, c]
        out[name] = volume
    return out


def _tissue_fractions(maps, gamma):
    """(csf, gm, wm) of the brain with the cortex thickened or thinned (WM ** gamma,
    GM taking what WM gives up), and the brain mask."""
    mask = maps["mask"] > 0.5
    wm = np.clip(maps["wm"], 0, 1) ** gamma
    gm = np.clip(maps["gm"] + maps["wm"] - wm, 0, 1)
    csf = np.clip(1.0 - gm - wm, 0, 1)
    return {"csf": csf * mask, "gm": gm * mask, "wm": wm * mask}, mask


def _vessels(rng, csf, mask):
    """Vessel and choroid-plexus fraction: thin tubes where two smooth random fields
    both cross zero, kept where CSF is (sulci, cisterns, ventricles)."""
    box = csf.shape
    f1 = smooth_field(rng, (20, 24, 16), box)
    f2 = smooth_field(rng, (20, 24, 16), box)
    tubes = np.exp(-(f1 * f1 + f2 * f2) / (2 * 0.06**2))
    return np.where(mask, tubes * np.clip(2.0 * csf, 0, 1), 0).astype(np.float32)


def _tumour(rng, tumour, wm, mask):
    """(region slices, {compartment: fraction (sub-box)}, seg (sub-box uint8)).

    Core: an irregular ball of `radius_mm`, necrosis inside an enhancing rim (or one
    non-enhancing mass). Oedema: around the core, reaching `oedema_mm` into pure WM and
    a quarter of that into GM or CSF, so it follows white matter."""
    centre = np.array(tumour["centre_voxel"]) - BOX_LO
    radius, reach = tumour["radius_mm"], tumour["oedema_mm"]
    half = int(np.ceil(1.3 * radius + reach + 4))
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre).astype(int) + half + 1, mask.shape)
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = tuple(hi - lo)
    axes = [np.arange(a, b, dtype=np.float32) - c for a, b, c in zip(lo, hi, centre)]
    dist = np.sqrt(
        axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    )
    coarse = tuple(max(3, s // 8) for s in sub)
    d = dist / radius * (1.0 + 0.2 * smooth_field(rng, coarse, sub))  # irregular border
    inside = mask[region]
    core = (d < 1.0) & inside
    frac = {}
    if tumour["kind"] == "enhancing":
        necrosis = core & (d < tumour["necrosis"])
        rim_out = tumour["necrosis"] + tumour["rim"]
        enhancing = core & ~necrosis & (d < rim_out)
        frac["necrosis"] = necrosis.astype(np.float32)
        frac["enhancing"] = enhancing.astype(np.float32)
        frac["non_enhancing"] = (core & ~necrosis & ~enhancing).astype(np.float32)
    else:
        frac["non_enhancing"] = core.astype(np.float32)
    wm_local = scipy.ndimage.gaussian_filter(wm[region], 2.0)
    beyond = np.maximum(d - 1.0, 0.0) * radius  # ~ mm outside the core
    score = beyond / (reach * (0.25 + 0.75 * wm_local))
    score *= 1.0 + 0.25 * smooth_field(rng, coarse, sub)
    oedema = np.clip((1.0 - score) / 0.15, 0.0, 1.0) * inside * ~core
    frac["oedema"] = oedema.astype(np.float32)
    seg = np.zeros(sub, dtype=np.uint8)
    seg[oedema > 0.5] = LABELS["oedema"]
    for name in ("non_enhancing", "necrosis", "enhancing"):
        if name in frac:
            seg[frac[name] > 0.5] = LABELS[name]
    return region, frac, seg


def _textures(rng, sub, compartments):
    """{compartment: (PD, T1, T2) factor fields}: smooth log-normal textures. The
    enhancing rim shares the oedema's fields (viable tumour infiltrating oedematous
    tissue): with fields of its own, a field's mean over the thin rim shifted the rim's
    whole T2 against its neighbours by a random ~10 %, and T2 then separated it in some
    cases (AUC 0.1 or 0.9)."""
    coarse = tuple(max(3, s // 4) for s in sub)
    out = {
        name: tuple(
            np.exp(mr_physics.TEXTURE_SD * smooth_field(rng, coarse, sub)) for _ in range(3)
        )
        for name in compartments
    }
    if "enhancing" in out and "oedema" in out:
        out["enhancing"] = out["oedema"]
    return out


def _signals(params, fractions, vessels, region, tumour_frac, textures):
    """{modality: noise-free signal (box float32)}: each compartment's signal by its
    sequence's equation, mixed by the voxel's fractions (partial volume)."""
    field = params["field_T"]
    tissues = params["tissues"]
    out = {}
    for modality, sequence in params["sequences"].items():
        contrast = modality == "t1ce"
        healthy = {t: mr_physics.signal(sequence, *tissues[t]) for t in ("csf", "gm", "wm")}
        pd, t1, t2 = tissues["blood"]
        if contrast:
            t1, t2 = mr_physics.with_gadolinium(t1, t2, params["blood_gd_mM"], field)
        blood = mr_physics.signal(sequence, pd, t1, t2)
        if sequence["kind"] in ("t2_fse", "flair"):
            blood *= params["flow_void"]
        tissue = sum(fractions[t] * healthy[t] for t in healthy)
        signal = tissue * (1.0 - vessels) + vessels * blood
        local = signal[region]
        taken = sum(tumour_frac.values())
        mixed = local * (1.0 - taken)
        for name, share in tumour_frac.items():
            pd, t1, t2 = (v * f for v, f in zip(params["tumour_tissues"][name], textures[name]))
            if contrast and name == "enhancing":
                gd = params["tumour"]["gd_mM"] * textures[name][0]
                t1, t2 = mr_physics.with_gadolinium(t1, t2, gd, field)
            mixed += share * mr_physics.signal(sequence, pd, t1, t2)
        signal[region] = mixed
        out[modality] = signal.astype(np.float32)
    return out


def _thick_slices(volume, thickness, offset):
    """`volume` as acquired in axial slices `thickness` mm thick (a box slice profile)
    every `thickness` mm from `offset`, then linearly resampled back to 1 mm."""
    if thickness <= 1:
        return volume
    averaged = scipy.ndimage.uniform_filter1d(volume, thickness, axis=2, mode="nearest")
    centres = np.arange(offset, volume.shape[2], thickness)
    acquired = averaged[:, :, centres]
    z = np.arange(volume.shape[2], dtype=np.float32)
    upper = np.clip(np.searchsorted(centres, z), 1, len(centres) - 1)
    w = np.clip((z - centres[upper - 1]) / thickness, 0, 1).astype(np.float32)
    return acquired[:, :, upper - 1] * (1 - w) + acquired[:, :, upper] * w


def _acquire(rng, signal, acquisition, wm_level, mask):
    """One contrast as scanned: gain and bias field, thick slices, Rician noise (SD =
    WM signal / SNR), a rigid misregistration; zero outside the (T1CE's) brain."""
    box = signal.shape
    bias = np.exp(acquisition["bias_sd"] * smooth_field(rng, (3, 3, 3), box))
    image = signal * bias * acquisition["gain"]
    thickness = acquisition["slice_mm"]
    image = _thick_slices(image, thickness, int(rng.integers(0, thickness)))
    sigma = wm_level * acquisition["gain"] / acquisition["snr"]
    noise = rng.standard_normal((2,) + box, dtype=np.float32) * np.float32(sigma)
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    rotation = _rotation(acquisition["rotation_deg"])
    if not np.allclose(rotation, np.eye(3)) or any(acquisition["shift_mm"]):
        centre = np.array(box) / 2.0
        offset = centre - rotation @ centre + np.array(acquisition["shift_mm"])
        image = scipy.ndimage.affine_transform(image, rotation, offset, order=1)
    return np.where(mask, np.clip(np.rint(image), 1, 32767), 0).astype(np.int16)


def make_case(seed, index, grade, anatomy="mni152", template=None, truth=False):
    """One v2 case: ({modality: int16, 'seg': uint8} at SHAPE, its parameters (JSON
    ready)[, truth maps on the box: fractions, vessels, tumour, `box_lo`, for tests])."""
    rng = np.random.default_rng([seed, index, 2])
    padded, near, deep = _padded(anatomy, template)
    params = draw_case(rng, grade, deep)
    params = {"phantom": VERSION, "anatomy": anatomy, "seed": seed, "index": index} | params
    params["grade"] = grade
    coords = _output_to_anatomy(rng, params["deformation"], params["tumour"])
    maps = _sample_anatomy(coords, padded, near)
    del coords
    fractions, mask = _tissue_fractions(maps, params["deformation"]["cortex_gamma"])
    vessels = _vessels(rng, fractions["csf"], mask)
    region, tumour_frac, seg_local = _tumour(rng, params["tumour"], fractions["wm"], mask)
    textures = _textures(rng, seg_local.shape, tumour_frac)
    signals = _signals(params, fractions, vessels, region, tumour_frac, textures)
    volumes = {}
    for modality in MODALITIES:
        sequence = params["sequences"][modality]
        wm_level = mr_physics.signal(sequence, *params["tissues"]["wm"])
        image = _acquire(rng, signals[modality], params["acquisition"][modality], wm_level, mask)
        volumes[modality] = _in_grid(image, np.int16)
    seg = np.zeros(mask.shape, dtype=np.uint8)
    seg[region] = seg_local
    volumes["seg"] = _in_grid(seg * mask, np.uint8)
    params["volumes_ml"] = {
        "brain": float(mask.sum() / 1000),
        "ventricles": float((maps["ventricles"] > 0.5).sum() / 1000),
        "vessels": float(vessels.sum() / 1000),
        "tumour_core": float(((seg_local == 1) | (seg_local == 4)).sum() / 1000),
        "oedema": float((seg_local == 2).sum() / 1000),
    }
    if not truth:
        return volumes, params
    tumour_box = {}
    for name, share in tumour_frac.items():
        full = np.zeros(mask.shape, dtype=np.float32)
        full[region] = share
        tumour_box[name] = full
    maps_truth = dict(fractions, vessels=vessels, mask=mask, box_lo=BOX_LO, **tumour_box)
    return volumes, params, maps_truth


def _in_grid(box_volume, dtype):
    """A box volume placed into the BraTS grid (zeros elsewhere)."""
    out = np.zeros(SHAPE, dtype=dtype)
    hi = np.minimum(BOX_HI, SHAPE)
    out[tuple(slice(a, b) for a, b in zip(BOX_LO, hi))] = box_volume[
        tuple(slice(0, b - a) for a, b in zip(BOX_LO, hi))
    ]
    return out
