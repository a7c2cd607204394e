"""GCNet ContextBlock (mmcv semantics)."""
import torch

from cardd_d2.modeling.layers import ContextBlock


def test_identity_at_init_and_names():
    torch.manual_seed(0)
    m = ContextBlock(16, ratio=1 / 4)
    names = set(dict(m.named_parameters()))
    assert names == {
        "conv_mask.weight", "conv_mask.bias",
        "channel_add_conv.0.weight", "channel_add_conv.0.bias",
        "channel_add_conv.1.weight", "channel_add_conv.1.bias",
        "channel_add_conv.3.weight", "channel_add_conv.3.bias",
    }
    assert m.channel_add_conv[0].out_channels == 4
    assert tuple(m.channel_add_conv[1].normalized_shape) == (4, 1, 1)
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(m(x), x)


def test_attention_pooling_and_channel_add_match_definition():
    torch.manual_seed(0)
    m = ContextBlock(8, ratio=0.5)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 8, 3, 4)
    w = torch.softmax(torch.einsum("nchw,c->nhw", x, m.conv_mask.weight[0, :, 0, 0]).flatten(1)
                      + m.conv_mask.bias, dim=1)  # (N, HW)
    ctx = torch.einsum("ncp,np->nc", x.flatten(2), w)[:, :, None, None]
    t = m.channel_add_conv[0](ctx)
    t = torch.nn.functional.layer_norm(t, (4, 1, 1), m.channel_add_conv[1].weight, m.channel_add_conv[1].bias)
    t = m.channel_add_conv[3](torch.relu(t))
    torch.testing.assert_close(m(x), x + t)


def test_gradients_reach_block():
    torch.manual_seed(0)
    m = ContextBlock(8)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    m(x).pow(2).sum().backward()
    assert m.channel_add_conv[3].weight.grad.abs().sum() > 0  # last conv learns first ...
    with torch.no_grad():
        m.channel_add_conv[3].weight.normal_()
    m.zero_grad()
    m(x).pow(2).sum().backward()
    for p in m.parameters():  # ... and then the signal reaches every parameter
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_bf16_autocast():
    m = ContextBlock(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(1, 8, 4, 4))
    assert torch.isfinite(y.float()).all()
