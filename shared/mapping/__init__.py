"""The declarative field mapping between referrals and Salesforce (`mappings/salesforce.json`).

A user changes the mapping without touching code; a bad file is refused at load with every problem.
"""

from shared.mapping.engine import Mapping, MergeField, OpportunityFields, ReferralUpdate
from shared.mapping.errors import IllegalTransition, MappingError, MissingPrerequisites, Problem, UnmappedValue
from shared.mapping.fields import Direction, FieldMap, ObjectMapping, Policy, SolutionsField, StageField
from shared.mapping.loader import read_document, sobjects_of, validate
from shared.mapping.patch import patch_ops
from shared.mapping.stages import Phase, StageTable, Transition

__all__ = [
    "Direction",
    "FieldMap",
    "IllegalTransition",
    "Mapping",
    "MappingError",
    "MergeField",
    "MissingPrerequisites",
    "ObjectMapping",
    "OpportunityFields",
    "Phase",
    "Policy",
    "Problem",
    "ReferralUpdate",
    "SolutionsField",
    "StageField",
    "StageTable",
    "Transition",
    "UnmappedValue",
    "patch_ops",
    "read_document",
    "sobjects_of",
    "validate",
]
