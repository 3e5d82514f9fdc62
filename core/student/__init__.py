"""The tiny student of seed 000: a small transformer that reads a document with the teacher's
tokenizer and predicts the teacher's z-normalized mean-pooled residual at one hook.

    from core.student import Student
    student = Student.load("RUN/artifacts/student")
    z = student.vectors(["some text", "more text"])      # [2, d_teacher]

Trained by the job kind "student" (core/jobs/student_job.py); a classification head on top of
a copy of a student: core.student.classify_head.
"""

from core.student.model import StudentConfig, StudentModel
from core.student.student import Student, StudentError, is_student_folder
from core.student.train import StudentTrainConfig, StudentTrainer

__all__ = ["Student", "StudentConfig", "StudentError", "StudentModel", "StudentTrainConfig",
           "StudentTrainer", "is_student_folder"]
