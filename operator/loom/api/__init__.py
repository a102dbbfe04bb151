"""Pydantic models of Loom's custom resources: the single source of truth for the API.

Pure: no I/O. `loom.crd` turns these models into CustomResourceDefinitions.
"""

from loom.api.common import GROUP, VERSION, Condition, ConditionStatus, KubeModel
from loom.api.featurepipeline import FeaturePipeline, FeaturePipelineSpec, FeaturePipelineStatus
from loom.api.inferenceservice import InferenceService, InferenceServiceSpec, InferenceServiceStatus
from loom.api.trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "FeaturePipeline",
    "FeaturePipelineSpec",
    "FeaturePipelineStatus",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "KubeModel",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
