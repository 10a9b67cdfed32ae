import numpy as np
import torch
from torch import nn

from anomalykit import Detector, Param, hookimpl
from anomalykit.data.lazy import open_rows
from anomalykit.sdk import MLPCritic
from anomalykit.training import WeightAverage


class LegacyMembers(Detector):
    """An autoencoder's squared reconstruction error; a critic learns to predict it."""

    name = "legacy-members"
    summary = "autoencoder reconstruction error (uses every member deprecated in anomalykit 0.2.0)"
    params = (
        Param("hidden", 32, "hidden units", low=1),
        Param("epochs", 10, "training epochs", low=0),
        Param("lr", 2e-3, "Adam learning rate", low=0.0),
    )

    def _build(self, input_shape):
        dim = int(np.prod(input_shape))
        self.nets["ae"] = nn.Sequential(nn.Linear(dim, self.hp.hidden), nn.ReLU(), nn.Linear(self.hp.hidden, dim))
        self.nets["critic"] = MLPCritic(dim, hidden=(self.hp.hidden,), feature_dim=8)

    def _fit(self, X, y):
        ae, critic = self.nets["ae"], self.nets["critic"]
        optimizers = {"ae": torch.optim.Adam(ae.parameters(), lr=self.hp.lr),
                      "critic": torch.optim.Adam(critic.parameters(), lr=self.hp.lr)}
        trainer = self.trainer(optimizers=optimizers, average=("ae",), average_decay=0.5)
        critic_average = WeightAverage({"critic": critic}, decay=0.5)

        def step(x, ctx):
            flat = x.reshape(x.shape[0], -1)
            loss = (ae(flat) - flat).pow(2).mean()
            ae_loss = ctx.update("ae", loss, term="reconstruction")
            target = (ae(flat) - flat).pow(2).sum(1).detach()
            value, _ = critic.forward_with_features(flat)
            critic_loss = ctx.update("critic", (value - target).pow(2).mean(), term="critic")
            critic_average.update()
            return {"ae": ae_loss, "critic": critic_loss}

        trainer.run(X, step)
        critic_average.copy_to_modules()
        with torch.no_grad():
            self.decision_scores_ = self._score(X.to(self.device)).cpu().numpy()

    def _score(self, X):
        flat = X.reshape(X.shape[0], -1)
        return (self.nets["ae"](flat) - flat).pow(2).sum(1)

    def predict(self, X):
        return super().predict(X)

    def score_file(self, path):
        """Scores of the rows of a .npy file, read lazily."""
        return self.score_samples(open_rows(path))


@hookimpl
def anomalykit_register_methods(register):
    register(LegacyMembers)
