"""Forms of the pages (sign-up is Django's own UserCreationForm)."""

from django import forms

from .models import Thread


class ThreadTitleForm(forms.ModelForm):
    class Meta:
        model = Thread
        fields = ("title",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Blank on the model (a new thread has none until its first message), but a rename must name it.
        self.fields["title"].required = True
