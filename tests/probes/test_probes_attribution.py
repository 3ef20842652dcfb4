import torch

from probes.attribution import slot_attributions, token_attributions


def test_integrated_gradients_completeness(plain_model):
    ids = torch.randint(1, 50, (1, 10))
    for baseline in ("pad", "zeros"):
        res = token_attributions(plain_model, ids, position=8, target=int(ids[0, 9]), baseline=baseline, n_steps=32)
        assert res.attributions.shape == (10,)
        if baseline == "pad":  # the zero path crosses RMSNorm's singular point at 0 (see module doc)
            assert res.relative_error < 0.05, (baseline, res.relative_error)
        # causality: tokens after the target position get no attribution
        assert res.attributions[9].abs() < 1e-8
        # F(x) is the target logit
        with torch.no_grad():
            assert abs(res.f_input - plain_model(ids)["logits"][0, 8, int(ids[0, 9])].item()) < 1e-5
    assert len(res.frame()) == 10


def test_slot_attribution(bank_model):
    ids = torch.randint(1, 50, (1, 20))
    res = slot_attributions(bank_model, ids, layer=1, position=18, target=int(ids[0, 19]), n_steps=32)
    assert res.attributions.shape == (20, 4)
    assert res.relative_error < 0.05
    assert res.attributions[19:].abs().max() < 1e-8  # the future gets nothing
    gxa = slot_attributions(bank_model, ids, layer=1, position=18, target=int(ids[0, 19]), method="grad_x_act")
    assert gxa.attributions.shape == (20, 4) and torch.isfinite(gxa.attributions).all()
    assert set(res.frame().columns) == {"layer", "pos", "slot", "attribution"}
