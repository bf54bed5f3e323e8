"""The measured calibration: curves, borrowing by family, validation helpers."""

import numpy as np
import pandas as pd
import pytest

from simcluster.calibration import NEUTRAL, load_calibration
from simcluster.calibration.fitted import Curve, GroupedCurve
from simcluster.calibration.tables import calibrated_devices, read_table
from simcluster.analysis.calibration_validation import error_table, holdout, validate_table
from simcluster.cost import CostModel
from simcluster.errors import InputError
from simcluster.hardware import list_devices, load_device


@pytest.fixture(scope="module")
def measured():
    return load_calibration("measured")


@pytest.mark.parametrize("device, how", [("H100-SXM", "own tables"), ("H200", "own tables"),
                                         ("A100-80GB", "imported from Vidur"),
                                         ("L4", "cross-family"),
                                         ("A10G", "borrowed from A100-80GB (ampere)"),
                                         ("Xeon-Platinum-8480+", "borrowed from Lent-Host"),
                                         ("Xeon-Gold-6148", "cross-family")])
def test_provenance_names_the_source(measured, device, how):
    assert how in measured.provenance(load_device(device))


@pytest.mark.parametrize("device", list_devices())
def test_every_device_spec_predicts_positive_finite_times(measured, device):
    dev = load_device(device)
    cost = CostModel(measured)
    for op, shape in [("gemm", dict(m=64, n=4096, k=4096)),
                      ("attn_decode", dict(batch=8, kv_len=2048, num_heads=32,
                                           num_kv_heads=8, head_dim=128)),
                      ("attn_prefill", dict(tokens=512, num_heads=32, num_kv_heads=32,
                                            head_dim=128)),
                      ("elementwise", dict(bytes=1e7))]:
        t = cost.predict_op(op, dev, **shape)["time_s"]
        roof = CostModel(NEUTRAL).predict_op(op, dev, **shape)["time_s"]
        assert np.isfinite(t) and t > 0
        assert t >= 0.5 * roof      # never far faster than the datasheet roofline


def test_in_sample_gemm_reproduces_measurements(measured):
    meta, df = read_table(calibrated_devices()["H100-SXM"] / "gemm.csv")
    assert meta["device_name"].startswith("NVIDIA H100")
    rows = df.sample(200, random_state=0)
    cost, dev = CostModel(measured), load_device("H100-SXM")
    pred = np.array([cost.predict_op("gemm", dev, m=r.m, n=r.n, k=r.k)["time_s"]
                     for r in rows.itertuples()])
    err = np.abs(pred / rows.time_s.to_numpy() - 1)
    assert np.median(err) < 0.01 and err.max() < 0.05


def test_holdout_gemm_error_is_small():
    dev = load_device("H100-SXM")
    pred = holdout(calibrated_devices()["H100-SXM"], dev, seed=5)
    table = error_table(pred)
    assert table.loc["gemm", "median_ape_pct"] < 5
    assert table.loc["attn_decode", "median_ape_pct"] < 10


def test_curve_nearest_outside_hull_and_constant_features():
    X = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1.0]])
    y = np.array([0.0, 1.0, 2.0, 3.0])
    c = Curve(X, y)                       # the first feature never varies: dropped
    assert c.dim == 2
    assert c([[0, 0.5, 0.5]])[0] == pytest.approx(1.5)
    assert c([[0, 5, 5]])[0] == pytest.approx(3.0)      # nearest measured point
    g = GroupedCurve(np.array([[1, 1, 0], [1, 1, 1], [1, 1, 2], [2, 2, 0], [2, 2, 2.0]]),
                     np.array([0.0, 1.0, 0.0, 5.0, 5.0]), exact=2)
    assert g([[1, 1, 0.5]])[0] == pytest.approx(0.5)   # within its (n, k) pair only


def test_validate_table_on_user_csv(tmp_path):
    src = calibrated_devices()["H100-SXM"] / "attn_decode.csv"
    out = validate_table(CostModel(load_calibration("measured")), src, "H100-SXM")
    assert len(out) > 50 and out.error.abs().median() < 0.1
    bad = tmp_path / "bad.csv"
    bad.write_text("# table: gemm\nm,n,k\n1,2,3\n")
    with pytest.raises(InputError, match="bad.csv.*time_s"):
        validate_table(CostModel(), bad, "H100-SXM")


@pytest.mark.parametrize("name, body, match", [
    ("gemm", "n,k,dtype,time_s\n4096,512,bf16,1e-5\n", r"gemm.csv: field 'm': missing column "
     r"'m' for a 'gemm' table"),
    ("gemm", "# table: gemm\n# device: X\nm,n,k,dtype,time_s\n8,4096,512,bf16,1e-5\n"
     "0,4096,512,bf16,1e-5\n", "gemm.csv:5: field 'm': expected a whole number >= 1.*found 0"),
    ("gemm", "m,n,k,dtype,time_s\n1.5,4096,512,bf16,1e-5\n", "gemm.csv:2: field 'm'.*1.5"),
    ("attn_prefill", "batch,seq_len,context,num_heads,num_kv_heads,head_dim,time_s\n"
     "1,64,,32,8,128,1e-5\n1,64,-8,32,8,128,1e-5\n",
     "attn_prefill.csv:3: field 'context': expected a whole number >= 0, found -8"),
    ("elementwise", "op,hidden,bytes,time_s\nrmsnorm,4096,nan,1e-5\n",
     "elementwise.csv:2: field 'bytes': expected a number of bytes >= 1, found an empty"),
    ("memcpy", "size_bytes,pinned,time_s\n1024,true,1e-6\n", "missing column 'direction'"),
])
def test_measured_tables_are_checked_when_loaded(tmp_path, name, body, match):
    from simcluster.calibration.tables import load_tables
    (tmp_path / f"{name}.csv").write_text(body)
    with pytest.raises(InputError, match=match):
        load_tables(tmp_path)


def test_bundled_tables_pass_the_checks():
    from simcluster.calibration.tables import load_tables
    for folder in calibrated_devices().values():
        assert load_tables(folder)


def test_op_csv_validation(tmp_path):
    p = tmp_path / "iters.csv"
    pd.DataFrame({"op": ["iteration"], "model": ["llama-2-7b"], "device": ["H100-SXM"],
                  "decode_seqs": [8], "decode_context": [1024],
                  "measured_time_s": [0.008]}).to_csv(p, index=False)
    out = validate_table(CostModel(load_calibration("measured")), p, None)
    assert out.pred_s.iloc[0] > 0 and "error" in out
    # --device beside a device column did nothing (each row names its own)
    with pytest.raises(InputError, match="does nothing: the CSV's device column") as err:
        validate_table(CostModel(), p, "L4")
    assert err.value.field == "--device"
