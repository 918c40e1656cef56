"""A Python function grader for the example: short answers score higher."""


def brevity(output: str, max_words: int = 5) -> dict:
    words = len(output.split())
    score = 1.0 if words <= max_words else max_words / words
    return {"score": score, "reason": f"{words} words (target <= {max_words})"}
