"""nnU-Net v2's own trainer, stopped by a wall-clock budget: the peer "nnU-Net" of benchmarks/peers.py.

peers.py copies this file into the nnunetv2 package of the peer's virtual environment (nnU-Net finds
trainers by class name inside ``nnunetv2/training/nnUNetTrainer``) and runs
``nnUNetv2_train ... -tr nnUNetTrainerBudget``. The trainer exists only where nnunetv2 is installed;
elsewhere (segnet's environment) the module gives peers.py the names they share.

Everything is nnU-Net's (plans, patches, augmentation, loss, deep supervision, poly learning rate
over its 1000 epochs, checkpoints) but the end: training stops after the step that uses up
``SEGNET_PEER_BUDGET_SECONDS`` (read from the environment), the epoch is closed as nnU-Net closes it
(one validation batch when over the budget, to keep its log whole), and ``checkpoint_final.pth`` is
written as at the end of a full run, which ``nnUNetv2_predict`` then uses. The validation that
``nnUNetv2_train`` runs after training (prediction of the validation cases, here the training cases:
fold ``all``) is skipped: the benchmark scores nnU-Net on its own held-out images. The number of
training samples and seconds go to ``OUTPUT_FOLDER/segnet_peer_training.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

BUDGET_VARIABLE = "SEGNET_PEER_BUDGET_SECONDS"
TRAINER_NAME = "nnUNetTrainerBudget"
TRAINING_FILE = "segnet_peer_training.json"

try:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError:  # peers.py imports the names above where nnU-Net is not installed
    nnUNetTrainer = None


if nnUNetTrainer is not None:

    class nnUNetTrainerBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming; -tr finds it by TRAINER_NAME)
        """nnU-Net's trainer, stopped when the budget in ``SEGNET_PEER_BUDGET_SECONDS`` is spent."""

        def run_training(self) -> None:
            budget = float(os.environ[BUDGET_VARIABLE])
            self.on_train_start()
            started, samples, spent = time.perf_counter(), 0, False
            for _ in range(self.current_epoch, self.num_epochs):
                self.on_epoch_start()
                self.on_train_epoch_start()
                train_outputs = []
                for _ in range(self.num_iterations_per_epoch):
                    train_outputs.append(self.train_step(next(self.dataloader_train)))
                    samples += self.batch_size
                    spent = time.perf_counter() - started > budget
                    if spent:
                        break
                seconds = time.perf_counter() - started
                self.on_train_epoch_end(train_outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    batches = 1 if spent else self.num_val_iterations_per_epoch
                    self.on_validation_epoch_end(
                        [self.validation_step(next(self.dataloader_val)) for _ in range(batches)]
                    )
                self.on_epoch_end()
                if spent:
                    break
            self.on_train_end()
            Path(self.output_folder, TRAINING_FILE).write_text(json.dumps({"samples": samples, "seconds": seconds}))

        def perform_actual_validation(self, *args: object, **kwargs: object) -> None:
            """Skipped: fold ``all`` validates on the training cases, and the benchmark scores its own test images."""
            self.print_to_log_file("validation skipped: benchmarks/peers.py scores nnU-Net on its own test images")
