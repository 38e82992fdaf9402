"""A model class importable by ``--model-class tests.pipelines.usermodels:Tiny``."""

from torch import nn


class Tiny(nn.Module):
    def __init__(self, side: int = 8, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 16), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.body(x))
