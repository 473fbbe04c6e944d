"""One training step's loss: ViL-Seg's three objectives on the outputs of a forward pass, weighted and summed.

The cross-modal and clustering losses are computed over the whole global batch on every rank, but
each rank's backward only reaches its own share (methods/vilseg/distributed.py) and DDP averages
gradients over ranks; so those two terms enter ``total`` multiplied by the world size, which makes
every term's gradient the gradient of the global batch's loss whatever the number of processes.
``total`` is what is minimised; the logged values are the unscaled losses.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from benchmark.distributed import rank_and_world
from methods.vilseg.distributed import gather_with_grad, mean_no_grad, sum_with_grad
from methods.vilseg.losses import (
    clustering_loss,
    cross_modal_loss,
    distillation_loss,
    teacher_targets,
    updated_center,
)
from methods.vilseg.recipe import TrainRecipe
from methods.vilseg.views import align_to_local


@dataclass
class StepLoss:
    total: Tensor
    cross_modal: Tensor
    vision: Tensor
    clustering: Tensor
    center: Tensor  # DINO's centre after this step

    def values(self, recipe: TrainRecipe) -> dict[str, float]:
        """The unscaled losses and their weighted sum."""
        losses = {name: float(getattr(self, name).detach()) for name in ("cross_modal", "vision", "clustering")}
        total = sum(getattr(recipe, f"{name}_weight") * value for name, value in losses.items())
        return {"total": total, **losses}


def patch_assignments(maps: Tensor) -> Tensor:
    """Probability maps [..., K, h, w] -> one row per patch [N, K]."""
    num_clusters = maps.shape[-3]
    return maps.movedim(-3, -1).reshape(-1, num_clusters)


def step_loss(outputs: dict[str, Tensor], teacher_scores: Tensor, local_theta: Tensor, center: Tensor,
              recipe: TrainRecipe) -> StepLoss:
    """outputs: ViLSegModel.forward's dict; teacher_scores [B,P] of the global views; local_theta [V,B,2,3]."""
    cross_modal = cross_modal_loss(
        gather_with_grad(outputs["image"]), gather_with_grad(outputs["text"]), outputs["logit_scale"]
    )
    targets = teacher_targets(teacher_scores, center, recipe.teacher_temperature)
    vision = distillation_loss(outputs["local_scores"], targets, recipe.student_temperature)
    new_center = updated_center(center, teacher_scores, recipe.center_momentum, mean_no_grad)
    local = outputs["local_clusters"].softmax(dim=2)
    aligned = align_to_local(outputs["global_clusters"].softmax(dim=1), local_theta, tuple(local.shape[-2:]))
    clustering = clustering_loss(patch_assignments(aligned), patch_assignments(local), sum_with_grad)
    global_terms = recipe.cross_modal_weight * cross_modal + recipe.clustering_weight * clustering
    _, world = rank_and_world()
    total = global_terms * world + recipe.vision_weight * vision
    return StepLoss(total, cross_modal, vision, clustering, new_center)
