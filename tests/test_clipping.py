"""Gradient clipping with the fused AdamW under bf16 mixed precision: Lightning refuses it by default
(a fused optimizer "unscales gradients internally"); the framework's modules clip themselves."""

import lightning
import pytest
import torch

from undertale.models.optimization import AdamWTraining
from undertale.settings.optimizer import OptimizerSettings


class Tiny(AdamWTraining, lightning.LightningModule):
    def __init__(self, fused_optimizer: bool):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.optimizer_settings = OptimizerSettings(lr=1.0)
        self.fused_optimizer = fused_optimizer

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[0]) * 1e4).pow(2).mean()  # huge gradients: clipping must act

    def configure_optimizers(self):
        if self.fused_optimizer:  # what adamw_with_schedule builds on a GPU
            return torch.optim.AdamW(self.parameters(), lr=1e-3, fused=True)
        return super().configure_optimizers()


def fit(module: lightning.LightningModule) -> lightning.LightningModule:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = lightning.Trainer(accelerator="cpu", precision="bf16-mixed", gradient_clip_val=1.0, max_steps=2,
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
    trainer.fit(module, data)
    return module


def test_lightnings_own_clipping_refuses_a_fused_optimizer_under_mixed_precision():
    class LightningClipping(Tiny):
        configure_gradient_clipping = lightning.LightningModule.configure_gradient_clipping

    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        fit(LightningClipping(fused_optimizer=True))


def test_the_frameworks_modules_clip_with_a_fused_optimizer_under_bf16():
    clipped_norms = []

    class Recording(Tiny):
        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            clipped_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    fit(Recording(fused_optimizer=True))
    assert clipped_norms and all(norm <= 1.0 + 1e-4 for norm in clipped_norms), clipped_norms


def test_probes_run_in_the_trainers_precision_as_under_fsdp_mixed_precision(trained_run):
    """Under FSDP's mixed precision the layers run with bf16 weights while the embeddings give float32
    states; the model then works only inside the trainer's forward context (autocast). The probes ran
    outside it and failed on an H100 with "mat1 and mat2 must have the same dtype". The same failure
    on CPU: the layers' linear weights in bf16 (CPU's layer norm, unlike the compiled CUDA graph,
    also refuses bf16 weights on float inputs, so the norms stay float32)."""
    from undertale.inference.fill_mask import load_model
    from undertale.runtime.runs import RunDirectory
    from undertale.training.callbacks import Probes

    model = load_model(RunDirectory(trained_run), RunDirectory(trained_run).checkpoint(), torch.device("cpu"))
    for module in model.encoder.layers.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
    probes = Probes({"xor": "xor eax [MASK]"}, tokenizer=str(trained_run / "tokenizer.json"))
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype"):
        probes.fill(model)
    trainer = lightning.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    probes.on_validation_end(trainer, model)
    [(step, name, text, filled, top)] = probes.rows
    assert name == "xor" and filled.startswith("xor eax ") and "[MASK]" not in filled and top
